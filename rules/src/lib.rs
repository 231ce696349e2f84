//! Detector findings into alerts.
//!
//! [`AlertEngine`] keeps one open alert per (kind, tenant, subject): the first active
//! finding raises it (`firing`), later active findings update it silently (a severity
//! increase is announced again), and an inactive finding resolves it (`resolved`). Each
//! alert's `id` is stable for its life: a fingerprint of kind, tenant and subject with the
//! time it started. [`AlertEvent`] is the alert contract shared by stdout, JSON-lines
//! files, webhooks and storage (see `docs/alerts.md`).
//!
//! ```
//! use tapwatch_analyzer::{Finding, FindingKind, Severity};
//! use tapwatch_rules::{AlertEngine, AlertState};
//!
//! let mut engine = AlertEngine::default();
//! let mut f = Finding {
//!     kind: FindingKind::MissedHeartbeat, active: true, tenant: None,
//!     subject: "192.0.2.1:49152->192.0.2.2:3784/udp".into(), severity: Severity::Critical,
//!     started_ns: 1_000_000_000, detected_ns: 2_200_000_000, value: 1.2, threshold: 1.2,
//!     evidence: serde_json::json!({}),
//! };
//! let raised = engine.process(&f).unwrap();
//! assert_eq!(raised.state, AlertState::Firing);
//! f.active = false;
//! let cleared = engine.process(&f).unwrap();
//! assert_eq!((cleared.state, cleared.id.as_str()), (AlertState::Resolved, raised.id.as_str()));
//! ```
#![deny(missing_docs)]

pub mod webhook;

use rustc_hash::FxHashMap;
use serde::Serialize;
use tapwatch_analyzer::{Finding, FindingKind, Severity};

/// Version of the alert contract written in every event.
pub const CONTRACT_VERSION: u32 = 1;

/// Whether an alert is raised or cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds.
    Firing,
    /// The condition cleared.
    Resolved,
}

/// One alert event: the alert contract.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertEvent {
    /// Contract version.
    pub version: u32,
    /// Detector: `heavy_hitter`, `quadratic_setup_growth`, `missed_heartbeat`, `syn_retransmits`.
    pub kind: &'static str,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// Stable for the alert's life.
    pub id: String,
    /// `info`, `warning` or `critical`.
    pub severity: Severity,
    /// Tenant concerned, or null.
    pub tenant: Option<String>,
    /// An address, a service, or a flow `src:port->dst:port/proto`.
    pub subject: String,
    /// When the condition started, RFC 3339 UTC with nanoseconds (event time).
    pub started_at: String,
    /// When this event was detected, RFC 3339 UTC with nanoseconds (event time).
    pub detected_at: String,
    /// The measured value.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// The numbers behind it.
    pub evidence: serde_json::Value,
}

#[derive(Clone, Debug)]
struct OpenAlert {
    id: String,
    started_ns: u64,
    severity: Severity,
}

/// Alert lifecycle over findings.
#[derive(Debug, Default)]
pub struct AlertEngine {
    open: FxHashMap<(FindingKind, Option<String>, String), OpenAlert>,
    /// Events raised so far, by kind and state.
    pub counts: FxHashMap<(&'static str, &'static str), u64>,
}

impl AlertEngine {
    /// Alerts open now.
    pub fn open_alerts(&self) -> usize {
        self.open.len()
    }

    /// Applies a finding; returns the event to publish, if any.
    pub fn process(&mut self, f: &Finding) -> Option<AlertEvent> {
        let key = (f.kind, f.tenant.clone(), f.subject.clone());
        let event = match (f.active, self.open.get_mut(&key)) {
            (true, None) => {
                let id = alert_id(f.kind, f.tenant.as_deref(), &f.subject, f.started_ns);
                self.open.insert(
                    key,
                    OpenAlert {
                        id: id.clone(),
                        started_ns: f.started_ns,
                        severity: f.severity,
                    },
                );
                Some(event(f, AlertState::Firing, id, f.started_ns, f.severity))
            }
            (true, Some(open)) if f.severity > open.severity => {
                open.severity = f.severity;
                Some(event(
                    f,
                    AlertState::Firing,
                    open.id.clone(),
                    open.started_ns,
                    f.severity,
                ))
            }
            (true, Some(_)) => None,
            (false, Some(_)) => {
                let open = self.open.remove(&key).expect("present");
                Some(event(
                    f,
                    AlertState::Resolved,
                    open.id,
                    open.started_ns,
                    open.severity,
                ))
            }
            (false, None) => None,
        }?;
        let state = match event.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        };
        *self.counts.entry((event.kind, state)).or_insert(0) += 1;
        Some(event)
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
        kind: f.kind.name(),
        state,
        id,
        severity,
        tenant: f.tenant.clone(),
        subject: f.subject.clone(),
        started_at: rfc3339(started_ns),
        detected_at: rfc3339(f.detected_ns),
        value: f.value,
        threshold: f.threshold,
        evidence: f.evidence.clone(),
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
            evidence: serde_json::json!({"count": 1}),
        }
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
        let a = e.process(&finding(true, Severity::Warning, 5)).unwrap();
        assert_eq!(a.state, AlertState::Firing);
        assert!(
            e.process(&finding(true, Severity::Warning, 6)).is_none(),
            "repeats update the open alert"
        );
        let escalated = e.process(&finding(true, Severity::Critical, 7)).unwrap();
        assert_eq!(
            (escalated.id.as_str(), escalated.severity),
            (a.id.as_str(), Severity::Critical)
        );
        let r = e.process(&finding(false, Severity::Warning, 8)).unwrap();
        assert_eq!(
            (r.state, r.id.as_str(), r.started_at.as_str()),
            (AlertState::Resolved, a.id.as_str(), a.started_at.as_str())
        );
        assert!(e.process(&finding(false, Severity::Warning, 9)).is_none());
        let again = e.process(&finding(true, Severity::Warning, 50)).unwrap();
        assert_ne!(again.id, a.id, "a new incident is a new alert");
        assert_eq!(e.counts[&("heavy_hitter", "firing")], 3);
    }

    #[test]
    fn contract_fields_serialise() {
        let mut e = AlertEngine::default();
        let a = e
            .process(&finding(true, Severity::Warning, 1_767_225_600_000_000_000))
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
