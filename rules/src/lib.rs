//! Detector findings into alerts.
//!
//! [`AlertEngine`] keeps one open alert per (kind, tenant, subject): the first active
//! finding raises it (`firing`), later active findings update it silently (a severity
//! increase is announced again), and an inactive finding resolves it (`resolved`). Each
//! alert's `id` is stable for its life: a fingerprint of kind, tenant and subject with the
//! time it started. The `[rules]` config adds minimum durations, held resolves (flap
//! damping), severities, per-tenant and per-subject overrides, silences, and
//! tenant-isolation advice. [`AlertEvent`] is the alert contract shared by stdout,
//! JSON-lines files, webhooks and storage (see `docs/alerts.md`).
//!
//! ```
//! use tapwatch_analyzer::{Evidence, Finding, FindingKind, HeartbeatEvidence, Severity};
//! use tapwatch_rules::{AlertEngine, AlertState};
//!
//! let mut engine = AlertEngine::default();
//! let mut f = Finding {
//!     kind: FindingKind::MissedHeartbeat, active: true, tenant: None,
//!     subject: "192.0.2.1:49152->192.0.2.2:3784/udp".into(), severity: Severity::Critical,
//!     started_ns: 1_000_000_000, detected_ns: 2_200_000_000, value: 1.2, threshold: 1.2,
//!     evidence: Evidence::Heartbeat(HeartbeatEvidence::default()),
//! };
//! let raised = engine.process(&f).remove(0);
//! assert_eq!(raised.state, AlertState::Firing);
//! f.active = false;
//! let cleared = engine.process(&f).remove(0);
//! assert_eq!((cleared.state, cleared.id.as_str()), (AlertState::Resolved, raised.id.as_str()));
//! ```
#![deny(missing_docs)]

mod config;
pub mod lines;
pub mod webhook;

use rustc_hash::FxHashMap;
use serde::{Serialize, Serializer};
use tapwatch_analyzer::{Evidence, Finding, FindingKind, HeavyDimension, Severity};

pub use config::{parse_rfc3339, IsolationRules, KindRules, Override, RulesConfig, Silence};

/// Version of the alert contract written in every event.
pub const CONTRACT_VERSION: u32 = 1;

/// Kind name of tenant-isolation advice events.
pub const ISOLATION_ADVICE: &str = "isolation_advice";

/// What an alert is about: a detector's finding, or advice raised with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// See [`FindingKind::HeavyHitter`].
    HeavyHitter,
    /// See [`FindingKind::QuadraticSetupGrowth`].
    QuadraticSetupGrowth,
    /// See [`FindingKind::MissedHeartbeat`].
    MissedHeartbeat,
    /// See [`FindingKind::SynRetransmits`].
    SynRetransmits,
    /// See [`FindingKind::TrafficDrop`].
    TrafficDrop,
    /// See [`FindingKind::Retransmits`].
    Retransmits,
    /// See [`FindingKind::UpgradeFailure`].
    UpgradeFailure,
    /// Tenant-isolation advice raised with a tenant-level alert.
    IsolationAdvice,
    /// See [`FindingKind::LatencyShift`].
    LatencyShift,
}

impl AlertKind {
    /// Its name in the alert contract.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::HeavyHitter => FindingKind::HeavyHitter.name(),
            AlertKind::QuadraticSetupGrowth => FindingKind::QuadraticSetupGrowth.name(),
            AlertKind::MissedHeartbeat => FindingKind::MissedHeartbeat.name(),
            AlertKind::SynRetransmits => FindingKind::SynRetransmits.name(),
            AlertKind::TrafficDrop => FindingKind::TrafficDrop.name(),
            AlertKind::Retransmits => FindingKind::Retransmits.name(),
            AlertKind::UpgradeFailure => FindingKind::UpgradeFailure.name(),
            AlertKind::IsolationAdvice => ISOLATION_ADVICE,
            AlertKind::LatencyShift => FindingKind::LatencyShift.name(),
        }
    }
}

impl From<FindingKind> for AlertKind {
    fn from(k: FindingKind) -> AlertKind {
        match k {
            FindingKind::HeavyHitter => AlertKind::HeavyHitter,
            FindingKind::QuadraticSetupGrowth => AlertKind::QuadraticSetupGrowth,
            FindingKind::MissedHeartbeat => AlertKind::MissedHeartbeat,
            FindingKind::SynRetransmits => AlertKind::SynRetransmits,
            FindingKind::LatencyShift => AlertKind::LatencyShift,
            FindingKind::UpgradeFailure => AlertKind::UpgradeFailure,
            FindingKind::Retransmits => AlertKind::Retransmits,
            FindingKind::TrafficDrop => AlertKind::TrafficDrop,
        }
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for AlertKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for AlertKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whether an alert is raised or cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds.
    Firing,
    /// The condition cleared.
    Resolved,
}

impl AlertState {
    /// Its name in the alert contract: `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// Advice raised with a growing tenant's alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GrowthAdvice {
    /// What to do.
    pub advice: String,
    /// `quadratic_setup_growth`.
    pub cause: FindingKind,
    /// The growth exponent.
    pub exponent: f64,
    /// Its 95 % interval.
    pub exponent_ci95: [f64; 2],
    /// The tenant's nodes now.
    pub nodes_now: u64,
    /// The tenant's share of the relay's packets.
    pub packet_share: f64,
    /// Setups per second expected at twice the nodes.
    pub projected_setup_rate_at_2x_nodes: f64,
    /// Setups per second now.
    pub setup_rate_per_s: f64,
    /// The tenant's share of the relay's setups.
    pub setup_share: f64,
}

/// Advice raised with a tenant's heavy-hitter alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantShareAdvice {
    /// What to do.
    pub advice: String,
    /// The tenant's count over its baseline mean.
    pub baseline_factor: f64,
    /// `heavy_hitter`.
    pub cause: FindingKind,
    /// The tenant's nodes in the window.
    pub nodes: Option<u64>,
    /// The tenant's share of the window.
    pub share: f64,
}

/// Advice whose alert resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdviceResolved {
    /// The kind of the alert behind it.
    pub cause: FindingKind,
    /// The id of the alert behind it.
    pub cause_alert: String,
}

/// The `evidence` of an alert event: the finding's, or the advice's. Serialised flat.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AlertEvidence {
    /// A detector's numbers.
    Finding(Evidence),
    /// Isolation advice for a growing tenant.
    GrowthAdvice(GrowthAdvice),
    /// Isolation advice for a tenant far above its share.
    TenantShareAdvice(TenantShareAdvice),
    /// Isolation advice resolved with its alert.
    AdviceResolved(AdviceResolved),
}

impl AlertEvidence {
    /// The evidence as one JSON object, as the alert contract writes it.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Event time in nanoseconds, serialised as RFC 3339.
fn as_rfc3339<S: Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ns))
}

/// One alert event: the alert contract.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertEvent {
    /// Contract version.
    pub version: u32,
    /// `heavy_hitter`, `quadratic_setup_growth`, `missed_heartbeat`, `syn_retransmits`,
    /// `isolation_advice`, `latency_shift`.
    pub kind: AlertKind,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// Stable for the alert's life.
    pub id: String,
    /// `info`, `warning` or `critical`.
    pub severity: Severity,
    /// Tenant concerned, or null.
    pub tenant: Option<String>,
    /// An address, a service, a flow `src:port->dst:port/proto`, or a tenant.
    pub subject: String,
    /// When the condition started (event time, ns); `started_at` in RFC 3339 UTC with
    /// nanoseconds when serialised.
    pub started_ns: u64,
    /// When this event was detected (event time, ns); `detected_at` when serialised.
    pub detected_ns: u64,
    /// The measured value.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// The numbers behind it.
    pub evidence: AlertEvidence,
    /// The evidence capture's path relative to the data directory
    /// (`evidence/<id>.pcap`), when one is written: `evidence.evidence_pcap` in the
    /// contract.
    pub evidence_pcap: Option<String>,
}

/// The contract's field order and names (`started_at`, `detected_at` in RFC 3339, the
/// capture's name inside `evidence`).
impl Serialize for AlertEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            version: u32,
            kind: AlertKind,
            state: AlertState,
            id: &'a str,
            severity: Severity,
            tenant: &'a Option<String>,
            subject: &'a str,
            #[serde(serialize_with = "as_rfc3339")]
            started_at: u64,
            #[serde(serialize_with = "as_rfc3339")]
            detected_at: u64,
            value: f64,
            threshold: f64,
            evidence: EvidenceWithPcap<'a>,
        }
        Wire {
            version: self.version,
            kind: self.kind,
            state: self.state,
            id: &self.id,
            severity: self.severity,
            tenant: &self.tenant,
            subject: &self.subject,
            started_at: self.started_ns,
            detected_at: self.detected_ns,
            value: self.value,
            threshold: self.threshold,
            evidence: self.evidence_with_pcap(),
        }
        .serialize(s)
    }
}

/// `evidence` with the capture's name, as the contract writes it.
#[derive(Serialize)]
struct EvidenceWithPcap<'a> {
    #[serde(flatten)]
    numbers: &'a AlertEvidence,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence_pcap: Option<&'a str>,
}

impl AlertEvent {
    /// `evidence` as one JSON object, with `evidence_pcap` when a capture is written.
    pub fn evidence_json(&self) -> String {
        serde_json::to_string(&self.evidence_with_pcap()).unwrap_or_default()
    }

    fn evidence_with_pcap(&self) -> EvidenceWithPcap<'_> {
        EvidenceWithPcap {
            numbers: &self.evidence,
            evidence_pcap: self.evidence_pcap.as_deref(),
        }
    }

    /// `started_at`: RFC 3339 UTC with nanoseconds.
    pub fn started_at(&self) -> String {
        rfc3339(self.started_ns)
    }

    /// `detected_at`: RFC 3339 UTC with nanoseconds.
    pub fn detected_at(&self) -> String {
        rfc3339(self.detected_ns)
    }

    /// The advice text of an isolation-advice event that fired.
    pub fn advice(&self) -> Option<&str> {
        match &self.evidence {
            AlertEvidence::GrowthAdvice(a) => Some(&a.advice),
            AlertEvidence::TenantShareAdvice(a) => Some(&a.advice),
            _ => None,
        }
    }
}

/// A `[rules]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A silence's time does not parse.
    #[error("rules.silence[{index}].{field}: {value:?} is not an RFC 3339 UTC time such as \"2026-11-24T02:00:00Z\"")]
    BadTime {
        /// Which silence (0-based).
        index: usize,
        /// `from` or `until`.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// A silence ends before it starts.
    #[error("rules.silence[{index}]: until ({until}) is before from ({from})")]
    Backwards {
        /// Which silence.
        index: usize,
        /// Start.
        from: String,
        /// End.
        until: String,
    },
}

type Key = (FindingKind, Option<String>, String);

#[derive(Clone, Debug)]
struct OpenAlert {
    id: String,
    started_ns: u64,
    severity: Severity,
    advice: Option<String>,
}

/// Alert lifecycle over findings.
#[derive(Debug, Default)]
pub struct AlertEngine {
    cfg: RulesConfig,
    silences: Vec<(usize, u64, u64)>,
    open: FxHashMap<Key, OpenAlert>,
    /// First time (event time) each not-yet-raised condition was seen, for minimum durations.
    pending: FxHashMap<Key, u64>,
    /// Resolves held for flap damping: release time and the resolving finding.
    held: FxHashMap<Key, (u64, Finding)>,
    /// When each alert last resolved, for cooldowns.
    resolved_at: FxHashMap<Key, u64>,
    now: u64,
    /// Events raised so far, by kind and state.
    pub counts: FxHashMap<(&'static str, &'static str), u64>,
    /// Lost work of the rules: events not sent because of a silence, a mute, a disabled
    /// kind or a cooldown. Only grows; for `/metrics` and the summary.
    pub suppressed: u64,
}

impl AlertEngine {
    /// An engine applying `cfg`; silences are checked here.
    pub fn new(cfg: RulesConfig) -> Result<AlertEngine, RulesError> {
        let mut silences = Vec::new();
        for (i, s) in cfg.silences.iter().enumerate() {
            let from = parse_rfc3339(&s.from).ok_or_else(|| RulesError::BadTime {
                index: i,
                field: "from",
                value: s.from.clone(),
            })?;
            let until = parse_rfc3339(&s.until).ok_or_else(|| RulesError::BadTime {
                index: i,
                field: "until",
                value: s.until.clone(),
            })?;
            if until < from {
                return Err(RulesError::Backwards {
                    index: i,
                    from: s.from.clone(),
                    until: s.until.clone(),
                });
            }
            silences.push((i, from, until));
        }
        Ok(AlertEngine {
            cfg,
            silences,
            ..AlertEngine::default()
        })
    }

    /// Applies new rules; open alerts stay open (a changed severity shows on their next event).
    pub fn set_rules(&mut self, cfg: RulesConfig) -> Result<(), RulesError> {
        let fresh = AlertEngine::new(cfg)?;
        self.cfg = fresh.cfg;
        self.silences = fresh.silences;
        Ok(())
    }

    /// Alerts open now.
    pub fn open_alerts(&self) -> usize {
        self.open.len()
    }

    /// The open alerts: kind, tenant, subject, id, severity, start (event time, RFC 3339).
    pub fn open_list(&self) -> Vec<serde_json::Value> {
        let mut v: Vec<_> = self
            .open
            .iter()
            .map(|((kind, tenant, subject), a)| serde_json::json!({"kind": kind.name(), "tenant": tenant, "subject": subject, "id": a.id, "severity": a.severity, "started_at": rfc3339(a.started_ns)}))
            .collect();
        v.sort_by(|a, b| a["started_at"].as_str().cmp(&b["started_at"].as_str()));
        v
    }

    fn kind_rules(&self, kind: FindingKind) -> &KindRules {
        match kind {
            FindingKind::HeavyHitter => &self.cfg.heavy_hitter,
            FindingKind::QuadraticSetupGrowth => &self.cfg.quadratic_setup_growth,
            FindingKind::MissedHeartbeat => &self.cfg.missed_heartbeat,
            FindingKind::SynRetransmits => &self.cfg.syn_retransmits,
            FindingKind::LatencyShift => &self.cfg.latency_shift,
            FindingKind::UpgradeFailure => &self.cfg.upgrade_failure,
            FindingKind::Retransmits => &self.cfg.retransmits,
            FindingKind::TrafficDrop => &self.cfg.traffic_drop,
        }
    }

    fn silenced(&self, kind: AlertKind, tenant: Option<&str>, subject: &str, at: u64) -> bool {
        self.silences.iter().any(|(i, from, until)| {
            let s = &self.cfg.silences[*i];
            (*from..=*until).contains(&at)
                && s.kind.is_none_or(|k| AlertKind::from(k) == kind)
                && config::matches(&s.tenant, tenant)
                && config::matches(&s.subject, Some(subject))
        })
    }

    /// Applies a finding; returns the events to publish (possibly none, possibly advice too).
    ///
    /// A finding does not move the engine's clock (only [`AlertEngine::tick`] does), so the
    /// events of one subject never depend on when another subject's findings arrived; a
    /// resolve of this subject held until before the finding's time is released first.
    pub fn process(&mut self, f: &Finding) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        let key: Key = (f.kind, f.tenant.clone(), f.subject.clone());
        if self
            .held
            .get(&key)
            .is_some_and(|(at, _)| *at <= f.detected_ns)
        {
            if let Some((_, held)) = self.held.remove(&key) {
                out.extend(self.resolve(&key, &held));
            }
        }
        let rules = self.kind_rules(f.kind).clone();
        let ov = self
            .cfg
            .overrides
            .iter()
            .find(|o| {
                o.kind.is_none_or(|k| k == f.kind)
                    && config::matches(&o.tenant, f.tenant.as_deref())
                    && config::matches(&o.subject, Some(&f.subject))
            })
            .cloned();
        if rules.disabled || ov.as_ref().is_some_and(|o| o.mute) {
            self.suppressed += 1;
            return out;
        }
        let severity = ov
            .as_ref()
            .and_then(|o| o.severity)
            .or(rules.severity)
            .unwrap_or(f.severity);
        let min_duration = (ov
            .as_ref()
            .and_then(|o| o.min_duration_s)
            .unwrap_or(rules.min_duration_s)
            * 1e9) as u64;
        if f.active {
            // A resolve held for flap damping is cancelled: the alert simply stays open.
            self.held.remove(&key);
            if let Some(open) = self.open.get_mut(&key) {
                if severity > open.severity {
                    open.severity = severity;
                    let (id, started) = (open.id.clone(), open.started_ns);
                    out.extend(self.emit(f, AlertState::Firing, id, started, severity));
                }
                return out;
            }
            let cooldown = (rules.cooldown_s * 1e9) as u64;
            if self
                .resolved_at
                .get(&key)
                .is_some_and(|t| f.detected_ns < t.saturating_add(cooldown))
            {
                self.suppressed += 1;
                return out;
            }
            let first = *self.pending.entry(key.clone()).or_insert(f.detected_ns);
            if f.detected_ns.saturating_sub(first) < min_duration {
                return out;
            }
            self.pending.remove(&key);
            let id = alert_id(f.kind, f.tenant.as_deref(), &f.subject, f.started_ns);
            self.open.insert(
                key.clone(),
                OpenAlert {
                    id: id.clone(),
                    started_ns: f.started_ns,
                    severity,
                    advice: None,
                },
            );
            out.extend(self.emit(f, AlertState::Firing, id, f.started_ns, severity));
            if let Some(advice) = self.advice(f, severity) {
                if let Some(open) = self.open.get_mut(&key) {
                    open.advice = Some(advice.id.clone());
                }
                out.push(advice);
            }
        } else {
            self.pending.remove(&key);
            if self.open.contains_key(&key) {
                let hold = (rules.resolve_hold_s * 1e9) as u64;
                if hold > 0 {
                    self.held.insert(key, (f.detected_ns + hold, f.clone()));
                } else {
                    out.extend(self.resolve(&key, f));
                }
            }
        }
        out
    }

    /// Advances the engine's clock (event time; the engine calls it as windows are merged):
    /// releases held resolves that are due.
    pub fn tick(&mut self, now: u64) -> Vec<AlertEvent> {
        self.now = self.now.max(now);
        let now = self.now;
        let due: Vec<Key> = self
            .held
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in due {
            if let Some((_, f)) = self.held.remove(&key) {
                out.extend(self.resolve(&key, &f));
            }
        }
        out
    }

    /// Releases every held resolve (end of input).
    pub fn finish(&mut self) -> Vec<AlertEvent> {
        self.tick(u64::MAX)
    }

    fn resolve(&mut self, key: &Key, f: &Finding) -> Vec<AlertEvent> {
        let Some(open) = self.open.remove(key) else {
            return Vec::new();
        };
        if self.kind_rules(key.0).cooldown_s > 0.0 {
            if self.resolved_at.len() > 65_536 {
                let horizon = self.now.saturating_sub(86_400_000_000_000);
                self.resolved_at.retain(|_, t| *t >= horizon);
            }
            self.resolved_at.insert(key.clone(), f.detected_ns);
        }
        let mut out = self.emit(
            f,
            AlertState::Resolved,
            open.id.clone(),
            open.started_ns,
            open.severity,
        );
        if let Some(advice_id) = open.advice {
            let mut e = event(
                f,
                AlertState::Resolved,
                advice_id,
                open.started_ns,
                Severity::Info,
            );
            e.kind = AlertKind::IsolationAdvice;
            e.evidence = AlertEvidence::AdviceResolved(AdviceResolved {
                cause: f.kind,
                cause_alert: open.id,
            });
            out.extend(self.gate(e));
        }
        out
    }

    fn emit(
        &mut self,
        f: &Finding,
        state: AlertState,
        id: String,
        started_ns: u64,
        severity: Severity,
    ) -> Vec<AlertEvent> {
        self.gate(event(f, state, id, started_ns, severity))
    }

    /// Silences and counting: the last step before an event leaves.
    fn gate(&mut self, e: AlertEvent) -> Vec<AlertEvent> {
        if self.silenced(e.kind, e.tenant.as_deref(), &e.subject, e.detected_ns) {
            self.suppressed += 1;
            return Vec::new();
        }
        *self
            .counts
            .entry((e.kind.as_str(), e.state.as_str()))
            .or_insert(0) += 1;
        vec![e]
    }

    /// Tenant-isolation advice for a tenant-level alert that just fired.
    fn advice(&mut self, f: &Finding, severity: Severity) -> Option<AlertEvent> {
        let tenant = f.tenant.clone()?;
        let iso = &self.cfg.isolation;
        let evidence = match (&f.evidence, f.kind) {
            (Evidence::Growth(g), FindingKind::QuadraticSetupGrowth) if iso.on_setup_growth => {
                let advice = format!(
                    "move tenant {tenant} to a dedicated relay, or cap how many peers each of its nodes connects to: it makes {:.0}% of this relay's connection setups ({:.0}% of its packets), and its setups grow as nodes^{:.2}; at 2x its {} nodes expect {:.0} setups/s (now {:.1}/s)",
                    g.setup_share * 100.0,
                    g.packet_share * 100.0,
                    g.exponent,
                    g.nodes_now,
                    g.projected_setup_rate_at_2x_nodes,
                    g.setup_rate_per_s,
                );
                AlertEvidence::GrowthAdvice(GrowthAdvice {
                    advice,
                    cause: FindingKind::QuadraticSetupGrowth,
                    exponent: g.exponent,
                    exponent_ci95: g.exponent_ci95,
                    nodes_now: g.nodes_now,
                    packet_share: g.packet_share,
                    projected_setup_rate_at_2x_nodes: g.projected_setup_rate_at_2x_nodes,
                    setup_rate_per_s: g.setup_rate_per_s,
                    setup_share: g.setup_share,
                })
            }
            (Evidence::HeavyHitter(h), FindingKind::HeavyHitter)
                if iso.on_tenant_share && h.dimension == HeavyDimension::Tenant =>
            {
                let jump = if h.baseline_mean > 0.0 {
                    h.count as f64 / h.baseline_mean
                } else {
                    f64::INFINITY
                };
                let advice = format!("tenant {tenant} drives {:.0}% of this relay's packets ({jump:.1}x its baseline): move it to a dedicated relay if it persists", h.share * 100.0);
                AlertEvidence::TenantShareAdvice(TenantShareAdvice {
                    advice,
                    baseline_factor: jump,
                    cause: FindingKind::HeavyHitter,
                    nodes: h.nodes,
                    share: h.share,
                })
            }
            _ => return None,
        };
        let id = alert_id(
            f.kind,
            Some(&tenant),
            &format!("{ISOLATION_ADVICE}:{}", f.subject),
            f.started_ns,
        );
        let mut e = event(
            f,
            AlertState::Firing,
            id,
            f.started_ns,
            severity.min(Severity::Warning),
        );
        e.kind = AlertKind::IsolationAdvice;
        e.evidence = evidence;
        self.gate(e).pop()
    }
}

fn event(
    f: &Finding,
    state: AlertState,
    id: String,
    started_ns: u64,
    severity: Severity,
) -> AlertEvent {
    AlertEvent {
        version: CONTRACT_VERSION,
        kind: f.kind.into(),
        state,
        id,
        severity,
        tenant: f.tenant.clone(),
        subject: f.subject.clone(),
        started_ns,
        detected_ns: f.detected_ns,
        value: f.value,
        threshold: f.threshold,
        evidence: AlertEvidence::Finding(f.evidence.clone()),
        evidence_pcap: None,
    }
}

/// FNV-1a of some bytes as 16 hex digits.
pub(crate) fn alert_id_bytes(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A tiny SplitMix64 for retry jitter (no need for a cryptographic source).
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Jitter {
        Jitter(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A stable alert id: FNV-1a over kind, tenant, subject and start time, as 16 hex digits.
pub fn alert_id(kind: FindingKind, tenant: Option<&str>, subject: &str, started_ns: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(kind.name().as_bytes());
    eat(tenant.unwrap_or("").as_bytes());
    eat(subject.as_bytes());
    eat(&started_ns.to_be_bytes());
    format!("{h:016x}")
}

/// Nanoseconds since the Unix epoch as RFC 3339 UTC with nine fractional digits.
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(active: bool, severity: Severity, started: u64) -> Finding {
        Finding {
            kind: FindingKind::HeavyHitter,
            active,
            tenant: Some("acme".into()),
            subject: "10.1.0.5".into(),
            severity,
            started_ns: started,
            detected_ns: started + 1_000_000_000,
            value: 0.4,
            threshold: 0.2,
            evidence: Evidence::HeavyHitterResolved(
                tapwatch_analyzer::HeavyHitterResolvedEvidence {
                    peak_share: 0.4,
                    quiet_windows: 1,
                },
            ),
        }
    }

    #[test]
    fn the_capture_is_named_inside_evidence_only_when_written() {
        let mut e = AlertEngine::default()
            .process(&finding(true, Severity::Critical, 1_000_000_000))
            .remove(0);
        let plain = serde_json::to_value(&e).unwrap();
        assert!(plain["evidence"].get("evidence_pcap").is_none());
        assert!(!e.evidence_json().contains("evidence_pcap"));
        e.evidence_pcap = Some(format!("evidence/{}.pcap", e.id));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v["evidence"]["evidence_pcap"],
            format!("evidence/{}.pcap", e.id)
        );
        assert_eq!(
            v["evidence"]["peak_share"], 0.4,
            "beside the detector's numbers"
        );
        assert_eq!(v["started_at"], "1970-01-01T00:00:01.000000000Z");
        assert!(e.evidence_json().contains("\"evidence_pcap\""));
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_767_225_600_000_000_001),
            "2026-01-01T00:00:00.000000001Z"
        );
        assert_eq!(
            rfc3339(951_782_400_123_456_789),
            "2000-02-29T00:00:00.123456789Z"
        );
        assert_eq!(
            rfc3339(4_107_542_399_999_999_999),
            "2100-02-28T23:59:59.999999999Z"
        );
    }

    #[test]
    fn lifecycle_raises_once_updates_silently_and_resolves() {
        let mut e = AlertEngine::default();
        let a = e
            .process(&finding(true, Severity::Warning, 5))
            .pop()
            .unwrap();
        assert_eq!(a.state, AlertState::Firing);
        assert!(
            e.process(&finding(true, Severity::Warning, 6)).is_empty(),
            "repeats update the open alert"
        );
        let escalated = e
            .process(&finding(true, Severity::Critical, 7))
            .pop()
            .unwrap();
        assert_eq!(
            (escalated.id.as_str(), escalated.severity),
            (a.id.as_str(), Severity::Critical)
        );
        let r = e
            .process(&finding(false, Severity::Warning, 8))
            .pop()
            .unwrap();
        assert_eq!(
            (r.state, r.id.as_str(), r.started_ns),
            (AlertState::Resolved, a.id.as_str(), a.started_ns)
        );
        assert!(e.process(&finding(false, Severity::Warning, 9)).is_empty());
        let again = e
            .process(&finding(true, Severity::Warning, 50))
            .pop()
            .unwrap();
        assert_ne!(again.id, a.id, "a new incident is a new alert");
        assert_eq!(e.counts[&("heavy_hitter", "firing")], 3);
    }

    #[test]
    fn min_duration_hold_overrides_silences_and_advice() {
        let cfg: RulesConfig = toml::from_str(
            r#"
[heavy_hitter]
min_duration_s = 2
resolve_hold_s = 5

[[override]]
tenant = "quiet"
mute = true

[[override]]
subject = "10.1.*"
severity = "info"

[[silence]]
kind = "heavy_hitter"
subject = "10.9.0.1"
from = "1970-01-01T00:00:00Z"
until = "1970-01-01T00:01:40Z"
"#,
        )
        .unwrap();
        let mut e = AlertEngine::new(cfg).unwrap();
        let at = |active: bool, s: u64| Finding {
            detected_ns: s * 1_000_000_000,
            started_ns: 0,
            ..finding(active, Severity::Warning, 0)
        };
        // Needs 2 s of the condition before firing.
        assert!(e.process(&at(true, 1)).is_empty());
        let fired = e.process(&at(true, 3));
        assert_eq!(fired.len(), 1);
        assert_eq!(
            fired[0].severity,
            Severity::Info,
            "the subject override applies"
        );
        // A resolve is held 5 s; the condition returning within it cancels the resolve.
        assert!(e.process(&at(false, 4)).is_empty());
        assert!(e.process(&at(true, 6)).is_empty());
        assert!(e.process(&at(false, 7)).is_empty());
        let released = e.tick(12 * 1_000_000_000);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].state, AlertState::Resolved);
        assert_eq!(released[0].id, fired[0].id, "one alert across the flap");
        // Mutes and silences send nothing.
        let mut quiet = at(true, 20);
        quiet.tenant = Some("quiet".into());
        quiet.subject = "10.2.0.1".into();
        assert!(e.process(&quiet).is_empty());
        let mut silenced = at(true, 50);
        silenced.tenant = None;
        silenced.subject = "10.9.0.1".into();
        assert!(e.process(&silenced).is_empty());
        assert!(e
            .process(&Finding {
                detected_ns: 53_000_000_000,
                ..silenced.clone()
            })
            .is_empty());
        assert_eq!(
            e.suppressed, 2,
            "one mute, one silenced firing (the first sighting was still pending)"
        );
        // A quadratic-growth alert brings isolation advice, resolved with it.
        let growth = Finding {
            kind: FindingKind::QuadraticSetupGrowth,
            active: true,
            tenant: Some("swarm".into()),
            subject: "swarm".into(),
            severity: Severity::Critical,
            started_ns: 0,
            detected_ns: 60_000_000_000,
            value: 2.0,
            threshold: 1.6,
            evidence: Evidence::Growth(tapwatch_analyzer::GrowthEvidence {
                exponent: 2.0,
                nodes_now: 120,
                setup_rate_per_s: 30.0,
                projected_setup_rate_at_2x_nodes: 120.0,
                ..Default::default()
            }),
        };
        let ev = e.process(&growth);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].kind, ISOLATION_ADVICE);
        let advice = ev[1].advice().unwrap();
        assert!(
            advice.contains("swarm")
                && advice.contains("nodes^2.00")
                && advice.contains("120 setups/s"),
            "{advice}"
        );
        let done = e.process(&Finding {
            active: false,
            detected_ns: 90_000_000_000,
            ..growth
        });
        assert_eq!(
            done.iter()
                .map(|e| (e.kind.as_str(), e.state))
                .collect::<Vec<_>>(),
            vec![
                ("quadratic_setup_growth", AlertState::Resolved),
                (ISOLATION_ADVICE, AlertState::Resolved)
            ]
        );
    }

    #[test]
    fn cooldown_keeps_a_resolved_alert_quiet() {
        let cfg: RulesConfig = toml::from_str("[heavy_hitter]\ncooldown_s = 60\n").unwrap();
        let mut e = AlertEngine::new(cfg).unwrap();
        let at = |active: bool, s: u64| Finding {
            detected_ns: s * 1_000_000_000,
            started_ns: s * 1_000_000_000,
            ..finding(active, Severity::Warning, 0)
        };
        assert_eq!(e.process(&at(true, 1)).len(), 1);
        assert_eq!(e.process(&at(false, 5)).len(), 1);
        assert!(e.process(&at(true, 30)).is_empty(), "within the cooldown");
        let again = e.process(&at(true, 70));
        assert_eq!(
            (again.len(), again[0].state),
            (1, AlertState::Firing),
            "after the cooldown"
        );
    }

    #[test]
    fn bad_silences_are_reported() {
        let cfg: RulesConfig =
            toml::from_str("[[silence]]\nfrom = \"yesterday\"\nuntil = \"2026-01-01T00:00:00Z\"\n")
                .unwrap();
        let e = AlertEngine::new(cfg).unwrap_err().to_string();
        assert!(
            e.contains("rules.silence[0].from") && e.contains("yesterday"),
            "{e}"
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:01.5Z"),
            Some(1_767_225_601_500_000_000)
        );
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn contract_fields_serialise() {
        let mut e = AlertEngine::default();
        let a = e
            .process(&finding(true, Severity::Warning, 1_767_225_600_000_000_000))
            .pop()
            .unwrap();
        let v = serde_json::to_value(&a).unwrap();
        for k in [
            "kind",
            "state",
            "id",
            "severity",
            "tenant",
            "subject",
            "started_at",
            "detected_at",
            "value",
            "threshold",
            "evidence",
        ] {
            assert!(v.get(k).is_some(), "{k} missing: {v}");
        }
        assert_eq!(v["state"], "firing");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["started_at"], "2026-01-01T00:00:00.000000000Z");
        assert_eq!(v["id"].as_str().unwrap().len(), 16);
    }
}
