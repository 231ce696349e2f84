//! The `[rules]` section: severities, minimum durations, flap damping, overrides, silences.
use serde::Deserialize;
use tapwatch_analyzer::setting::f64_in;
use tapwatch_analyzer::{FindingKind, Severity};
use tapwatch_analyzer::{SettingError, SettingPath};

/// Longest duration any rule may name, seconds (a year).
const MAX_DURATION_S: f64 = 31_536_000.0;

/// Rules applied to findings before they become alert events.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Per-kind settings, e.g. `[rules.heavy_hitter]`.
    #[serde(default)]
    pub heavy_hitter: KindRules,
    /// `[rules.quadratic_setup_growth]`.
    #[serde(default)]
    pub quadratic_setup_growth: KindRules,
    /// `[rules.missed_heartbeat]`.
    #[serde(default)]
    pub missed_heartbeat: KindRules,
    /// `[rules.syn_retransmits]`.
    #[serde(default)]
    pub syn_retransmits: KindRules,
    /// `[rules.latency_shift]`.
    #[serde(default)]
    pub latency_shift: KindRules,
    /// `[rules.traffic_drop]`.
    #[serde(default)]
    pub traffic_drop: KindRules,
    /// `[rules.retransmits]`.
    #[serde(default)]
    pub retransmits: KindRules,
    /// `[rules.upgrade_failure]`.
    #[serde(default)]
    pub upgrade_failure: KindRules,
    /// `[[rules.override]]`: per tenant and/or subject.
    #[serde(default, rename = "override")]
    pub overrides: Vec<Override>,
    /// `[[rules.silence]]`: no events for matching alerts within a time range.
    #[serde(default, rename = "silence")]
    pub silences: Vec<Silence>,
    /// `[rules.isolation]`: when to advise moving a tenant.
    #[serde(default)]
    pub isolation: IsolationRules,
}

/// Settings of one kind of alert.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindRules {
    /// Severity to use instead of the detector's.
    pub severity: Option<Severity>,
    /// The condition must hold this many seconds (event time) before the alert fires.
    #[serde(default)]
    pub min_duration_s: f64,
    /// A resolve is held this many seconds; if the condition returns meanwhile the alert
    /// stays open and nothing is sent (flap damping).
    #[serde(default)]
    pub resolve_hold_s: f64,
    /// After an alert resolves, the same alert does not fire again for this many seconds
    /// (a condition still present after the cooldown fires as a new alert).
    #[serde(default)]
    pub cooldown_s: f64,
    /// Drop this kind entirely.
    #[serde(default)]
    pub disabled: bool,
}

/// Settings for matching alerts; the first override that matches wins.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Kind to match (any if absent).
    pub kind: Option<FindingKind>,
    /// Tenant to match (any if absent).
    pub tenant: Option<String>,
    /// Subject to match exactly, or a prefix ending in `*` (any if absent).
    pub subject: Option<String>,
    /// Severity to use.
    pub severity: Option<Severity>,
    /// Minimum duration to use.
    pub min_duration_s: Option<f64>,
    /// Drop matching alerts.
    #[serde(default)]
    pub mute: bool,
}

/// A maintenance window: matching alerts send nothing between `from` and `until`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    /// Kind to match (any if absent).
    pub kind: Option<FindingKind>,
    /// Tenant to match (any if absent).
    pub tenant: Option<String>,
    /// Subject (exact, or prefix ending in `*`).
    pub subject: Option<String>,
    /// Start, RFC 3339 (e.g. `2026-11-24T02:00:00Z`).
    pub from: String,
    /// End, RFC 3339.
    pub until: String,
    /// Why (for people reading the config).
    #[serde(default)]
    pub comment: String,
}

/// When a tenant's load earns an `isolation_advice` event.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IsolationRules {
    /// Advise on quadratic setup growth.
    pub on_setup_growth: bool,
    /// Advise when a tenant is a heavy hitter (share of the relay's packets).
    pub on_tenant_share: bool,
}

impl RulesConfig {
    /// Checks every duration against its range (0 to a year, seconds): the first one
    /// outside it, named by its path in the config file.
    pub fn check(&self) -> Result<(), SettingError> {
        let p = SettingPath::new("rules");
        for (kind, k) in [
            ("heavy_hitter", &self.heavy_hitter),
            ("quadratic_setup_growth", &self.quadratic_setup_growth),
            ("missed_heartbeat", &self.missed_heartbeat),
            ("syn_retransmits", &self.syn_retransmits),
            ("latency_shift", &self.latency_shift),
            ("upgrade_failure", &self.upgrade_failure),
            ("retransmits", &self.retransmits),
            ("traffic_drop", &self.traffic_drop),
        ] {
            let p = p.key(kind);
            f64_in(&p, "min_duration_s", k.min_duration_s, 0.0, MAX_DURATION_S)?;
            f64_in(&p, "resolve_hold_s", k.resolve_hold_s, 0.0, MAX_DURATION_S)?;
            f64_in(&p, "cooldown_s", k.cooldown_s, 0.0, MAX_DURATION_S)?;
        }
        for (i, o) in self.overrides.iter().enumerate() {
            if let Some(d) = o.min_duration_s {
                let p = p.key("override").index(i);
                f64_in(&p, "min_duration_s", d, 0.0, MAX_DURATION_S)?;
            }
        }
        Ok(())
    }
}

impl Default for IsolationRules {
    fn default() -> Self {
        IsolationRules {
            on_setup_growth: true,
            on_tenant_share: true,
        }
    }
}

/// Whether `pattern` (exact, or a prefix ending in `*`) matches `value`.
pub(crate) fn matches(pattern: &Option<String>, value: Option<&str>) -> bool {
    match (pattern, value) {
        (None, _) => true,
        (Some(p), Some(v)) => match p.strip_suffix('*') {
            Some(prefix) => v.starts_with(prefix),
            None => p == v,
        },
        (Some(_), None) => false,
    }
}

/// Parses RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SS[.frac]Z`) to ns since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        format!("{:0<9}", &frac[..frac.len().min(9)]).parse().ok()?
    };
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400_000_000_000 + (hh * 3600 + mm * 60 + ss) * 1_000_000_000 + frac_ns)
}
