//! Per-tenant detector thresholds: `[[analyzer.override]]` entries, resolved once per
//! tenant when the labels are made (start and each reload), so detectors read a tenant's
//! thresholds by its index with no matching on the hot path.
//!
//! Which tenant a key belongs to: a source by the tenants file's longest-prefix match of
//! its address; a destination or service by the same match of the destination address; a
//! flow by its source. The first override (in file order) whose `tenant` matches the name —
//! exactly, or as a prefix ending in `*` — gives that tenant's thresholds; settings it
//! leaves out keep the `[analyzer]` defaults.
use serde::Deserialize;
use tapwatch_classifier::setting::f64_in;
use tapwatch_classifier::{SettingError, SettingPath, TenantId};

use crate::config::AnalyzerConfig;

/// `[[analyzer.override]]`: thresholds for the tenants whose name matches `tenant`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantOverride {
    /// Tenant name, exact or a prefix ending in `*` (`"*"` matches every tenant).
    pub tenant: String,
    /// `heavy_hitters.min_share` for this tenant's keys.
    pub heavy_min_share: Option<f64>,
    /// `heavy_hitters.min_pps` for this tenant's keys.
    pub heavy_min_pps: Option<f64>,
    /// `heavy_hitters.min_bytes_per_s` for this tenant's sources.
    pub heavy_min_bytes_per_s: Option<f64>,
    /// `setup_growth.min_exponent` for this tenant (its clear exponent is lowered with it
    /// when the default one would be above it).
    pub growth_min_exponent: Option<f64>,
    /// `heartbeat.k` for this tenant's periodic flows.
    pub heartbeat_k: Option<f64>,
}

impl TenantOverride {
    /// Whether this override applies to the tenant called `name`.
    pub fn matches(&self, name: &str) -> bool {
        match self.tenant.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.tenant,
        }
    }

    /// Checks every value against the range of the setting it stands for.
    pub(crate) fn check(&self, p: &SettingPath) -> Result<(), SettingError> {
        if self.tenant.is_empty() || self.tenant.chars().count() > 256 {
            return Err(SettingError::new(
                p.key("tenant"),
                format!("{:?}", self.tenant),
                "a tenant name, or a prefix ending in *, of 1 to 256 characters",
            ));
        }
        let opt = |name: &str, v: Option<f64>, lo: f64, hi: f64| match v {
            Some(v) => f64_in(p, name, v, lo, hi),
            None => Ok(()),
        };
        opt("heavy_min_share", self.heavy_min_share, 0.0, 1.0)?;
        opt("heavy_min_pps", self.heavy_min_pps, 0.0, 1e12)?;
        opt(
            "heavy_min_bytes_per_s",
            self.heavy_min_bytes_per_s,
            0.0,
            1e15,
        )?;
        opt("growth_min_exponent", self.growth_min_exponent, 0.0, 10.0)?;
        opt("heartbeat_k", self.heartbeat_k, 1.0, 1000.0)
    }
}

/// The thresholds of every tenant of one labels generation, by tenant index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantThresholds {
    by_tenant: Vec<Thresholds>,
    defaults: Thresholds,
}

impl TenantThresholds {
    /// Resolves `cfg`'s overrides for each tenant name (by index).
    pub fn new(cfg: &AnalyzerConfig, names: &[String]) -> TenantThresholds {
        TenantThresholds {
            by_tenant: names.iter().map(|n| Thresholds::of(cfg, n)).collect(),
            defaults: Thresholds::defaults(cfg),
        }
    }

    /// The thresholds of a tenant index (the defaults for an index it does not know).
    #[inline]
    pub fn get(&self, tenant: TenantId) -> &Thresholds {
        self.by_tenant
            .get(usize::from(tenant.0))
            .unwrap_or(&self.defaults)
    }
}

/// The thresholds in force for one tenant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Heavy hitters: minimum share of the window.
    pub heavy_min_share: f64,
    /// Heavy hitters: minimum packets per second.
    pub heavy_min_pps: f64,
    /// Heavy hitters: minimum bytes per second (sources by bytes).
    pub heavy_min_bytes_per_s: f64,
    /// Setup growth: the exponent that flags a tenant.
    pub growth_min_exponent: f64,
    /// Setup growth: a flagged tenant clears below this exponent.
    pub growth_clear_exponent: f64,
    /// Heartbeats: deadline as a multiple of the learned period.
    pub heartbeat_k: f64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds::defaults(&AnalyzerConfig::default())
    }
}

impl Thresholds {
    /// The `[analyzer]` defaults.
    pub fn defaults(cfg: &AnalyzerConfig) -> Thresholds {
        Thresholds {
            heavy_min_share: cfg.heavy_hitters.min_share,
            heavy_min_pps: cfg.heavy_hitters.min_pps,
            heavy_min_bytes_per_s: cfg.heavy_hitters.min_bytes_per_s,
            growth_min_exponent: cfg.setup_growth.min_exponent,
            growth_clear_exponent: cfg.setup_growth.clear_exponent,
            heartbeat_k: cfg.heartbeat.k,
        }
    }

    /// The thresholds of the tenant called `name`: the first matching override over the
    /// defaults.
    pub fn of(cfg: &AnalyzerConfig, name: &str) -> Thresholds {
        let mut t = Thresholds::defaults(cfg);
        let Some(o) = cfg.overrides.iter().find(|o| o.matches(name)) else {
            return t;
        };
        t.heavy_min_share = o.heavy_min_share.unwrap_or(t.heavy_min_share);
        t.heavy_min_pps = o.heavy_min_pps.unwrap_or(t.heavy_min_pps);
        t.heavy_min_bytes_per_s = o.heavy_min_bytes_per_s.unwrap_or(t.heavy_min_bytes_per_s);
        if let Some(e) = o.growth_min_exponent {
            t.growth_min_exponent = e;
            t.growth_clear_exponent = t.growth_clear_exponent.min(e);
        }
        t.heartbeat_k = o.heartbeat_k.unwrap_or(t.heartbeat_k);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_overrides: &str) -> AnalyzerConfig {
        toml::from_str(toml_overrides).unwrap()
    }

    #[test]
    fn the_first_matching_override_wins_and_fills_only_what_it_sets() {
        let c = cfg(r#"
[[override]]
tenant = "edge-eu"
heavy_min_share = 0.6
[[override]]
tenant = "edge-*"
heavy_min_pps = 5000
growth_min_exponent = 1.2
heartbeat_k = 6
"#);
        c.check().unwrap();
        let d = Thresholds::defaults(&c);
        let eu = Thresholds::of(&c, "edge-eu");
        assert_eq!(eu.heavy_min_share, 0.6);
        assert_eq!(eu.heavy_min_pps, d.heavy_min_pps, "the first match only");
        let us = Thresholds::of(&c, "edge-us");
        assert_eq!(
            (us.heavy_min_share, us.heavy_min_pps),
            (d.heavy_min_share, 5000.0)
        );
        assert_eq!((us.growth_min_exponent, us.heartbeat_k), (1.2, 6.0));
        assert!(us.growth_clear_exponent <= 1.2);
        assert_eq!(Thresholds::of(&c, "core"), d);
        assert_eq!(Thresholds::of(&c, "edge"), d, "a prefix, not a substring");
    }

    #[test]
    fn values_outside_their_range_are_named() {
        for (bad, name) in [
            (
                "heavy_min_share = 1.5",
                "analyzer.override[1].heavy_min_share",
            ),
            ("heartbeat_k = 0.5", "analyzer.override[1].heartbeat_k"),
            (
                "growth_min_exponent = -1",
                "analyzer.override[1].growth_min_exponent",
            ),
        ] {
            let c = cfg(&format!("[[override]]\ntenant = \"a\"\n{bad}\n"));
            let e = c.check().unwrap_err().to_string();
            assert!(e.starts_with(name), "{e}");
        }
        let e = cfg("[[override]]\ntenant = \"\"\n").check().unwrap_err();
        assert!(
            e.to_string().starts_with("analyzer.override[1].tenant"),
            "{e}"
        );
        assert!(toml::from_str::<AnalyzerConfig>("[[override]]\ntenant = \"a\"\nk = 2\n").is_err());
    }
}
