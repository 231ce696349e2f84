//! Detector settings: the `[analyzer]` section of the config file. Every field has a
//! default that detects the scenario suite with no configuration beyond a tenants file.
use serde::Deserialize;
use tapwatch_classifier::setting::{f64_in, f64_positive, int_in};
use tapwatch_classifier::{SettingError, SettingPath};

pub use crate::detect::growth::SetupGrowthConfig;
pub use crate::detect::handshake::HandshakeConfig;
pub use crate::detect::heartbeat::HeartbeatConfig;
pub use crate::detect::heavy::HeavyHitterConfig;
pub use crate::detect::latency::LatencyConfig;
pub use crate::thresholds::TenantOverride;
// flow health (issue 14)
pub use crate::detect::retransmits::RetransmitConfig;
pub use crate::detect::traffic_drop::{DropGroup, TrafficDropConfig};
pub use crate::detect::upgrade::UpgradeConfig;

/// Windows and all detectors.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyzerConfig {
    /// Tumbling window width, seconds.
    pub window_s: f64,
    /// Packets up to this many seconds late are still counted in their window.
    pub grace_s: f64,
    /// Heavy hitters.
    pub heavy_hitters: HeavyHitterConfig,
    /// Quadratic connection-setup growth.
    pub setup_growth: SetupGrowthConfig,
    /// Missed heartbeats.
    pub heartbeat: HeartbeatConfig,
    /// Handshake latency and SYN retransmissions.
    pub handshake: HandshakeConfig,
    /// Latency measures and `latency_shift`.
    pub latency: LatencyConfig,
    /// `[[analyzer.override]]`: thresholds for some tenants; the first match wins.
    #[serde(rename = "override")]
    pub overrides: Vec<TenantOverride>,
    // flow health (issue 14)
    /// Traffic dropping to near zero.
    pub traffic_drop: TrafficDropConfig,
    /// Retransmitted TCP data.
    pub retransmits: RetransmitConfig,
    /// Failed HTTP upgrades.
    pub upgrade_failure: UpgradeConfig,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            window_s: 1.0,
            grace_s: 2.0,
            heavy_hitters: HeavyHitterConfig::default(),
            setup_growth: SetupGrowthConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            handshake: HandshakeConfig::default(),
            latency: LatencyConfig::default(),
            overrides: Vec::new(),
            traffic_drop: TrafficDropConfig::default(),
            retransmits: RetransmitConfig::default(),
            upgrade_failure: UpgradeConfig::default(),
        }
    }
}

impl AnalyzerConfig {
    /// Tumbling window width, ns (at least 1).
    pub fn window_ns(&self) -> u64 {
        ((self.window_s * 1e9) as u64).max(1)
    }

    /// Grace period for late packets, ns.
    pub fn grace_ns(&self) -> u64 {
        (self.grace_s * 1e9) as u64
    }
}

impl AnalyzerConfig {
    /// Checks every setting against its documented range (`docs/usage.md`, "Settings and
    /// their ranges"): the first one outside it, named by its path in the config file.
    pub fn check(&self) -> Result<(), SettingError> {
        let p = SettingPath::new("analyzer");
        f64_in(&p, "window_s", self.window_s, 0.01, 3600.0)?;
        f64_in(&p, "grace_s", self.grace_s, 0.0, 3600.0)?;
        self.heavy_hitters.check(&p.key("heavy_hitters"))?;
        self.setup_growth
            .check(&p.key("setup_growth"), self.window_s)?;
        self.heartbeat.check(&p.key("heartbeat"))?;
        self.handshake.check(&p.key("handshake"))?;
        self.latency.check(&p.key("latency"), self.window_s)?;
        // flow health (issue 14)
        self.traffic_drop
            .check(&p.key("traffic_drop"), self.window_s)?;
        self.retransmits
            .check(&p.key("retransmits"), self.window_s)?;
        self.upgrade_failure
            .check(&p.key("upgrade_failure"), self.window_s)?;
        for (i, o) in self.overrides.iter().enumerate() {
            o.check(&p.key("override").index(i))?;
        }
        Ok(())
    }
}

impl HeavyHitterConfig {
    fn check(&self, p: &SettingPath) -> Result<(), SettingError> {
        int_in(p, "sketch_capacity", self.sketch_capacity, 16, 1 << 20)?;
        f64_in(p, "min_share", self.min_share, 0.0, 1.0)?;
        f64_in(p, "min_pps", self.min_pps, 0.0, 1e12)?;
        f64_in(p, "min_bytes_per_s", self.min_bytes_per_s, 0.0, 1e15)?;
        f64_in(p, "baseline_factor", self.baseline_factor, 0.0, 1e6)?;
        f64_in(p, "baseline_sigmas", self.baseline_sigmas, 0.0, 1e6)?;
        f64_positive(p, "ewma_alpha", self.ewma_alpha, 1.0)?;
        f64_in(p, "warmup_s", self.warmup_s, 0.0, 1e6)?;
        f64_in(p, "warmup_share", self.warmup_share, 0.0, 1.0)?;
        f64_in(p, "warmup_factor", self.warmup_factor, 0.0, 1e6)?;
        f64_in(p, "clear_share", self.clear_share, 0.0, 1.0)?;
        f64_in(p, "clear_factor", self.clear_factor, 0.0, 1e6)?;
        int_in(p, "clear_windows", self.clear_windows, 1, 1_000_000)
    }
}

impl SetupGrowthConfig {
    fn check(&self, p: &SettingPath, window_s: f64) -> Result<(), SettingError> {
        f64_in(p, "point_s", self.point_s, window_s, 86_400.0)?;
        int_in(p, "history", self.history, 3, 100_000)?;
        int_in(p, "min_points", self.min_points, 3, self.history)?;
        f64_in(p, "min_exponent", self.min_exponent, 0.0, 10.0)?;
        f64_in(
            p,
            "clear_exponent",
            self.clear_exponent,
            0.0,
            self.min_exponent,
        )?;
        f64_in(p, "min_node_range", self.min_node_range, 1.0, 1e9)?;
        f64_in(p, "min_r2", self.min_r2, 0.0, 1.0)?;
        int_in(p, "exact_nodes", self.exact_nodes, 0, 1 << 24)?;
        int_in(p, "coarse_history", self.coarse_history, 3, 100_000)?;
        int_in(p, "coarse_levels_s", self.coarse_levels_s.len(), 0, 8)?;
        let mut finer = self.point_s;
        for (i, w) in self.coarse_levels_s.iter().enumerate() {
            // Each level a whole multiple of the one before, up to 30 days.
            let at = p.key("coarse_levels_s").index(i);
            let whole =
                w.is_finite() && *w > finer && ((w / finer) - (w / finer).round()).abs() < 1e-9;
            if !whole || *w > 30.0 * 86_400.0 {
                return Err(SettingError::new(
                    at,
                    w,
                    format!("a whole multiple of {finer} s (the level before), larger than it, at most 2592000 s"),
                ));
            }
            finer = *w;
        }
        f64_in(p, "min_node_trend", self.min_node_trend, 0.0, 1.0)?;
        f64_in(p, "node_horizon_s", self.node_horizon_s, 0.0, 86_400.0)
    }
}

impl HeartbeatConfig {
    fn check(&self, p: &SettingPath) -> Result<(), SettingError> {
        f64_in(p, "k", self.k, 1.0, 1000.0)?;
        int_in(p, "min_samples", self.min_samples, 2, 100_000)?;
        f64_in(p, "min_learn_s", self.min_learn_s, 0.0, 1e6)?;
        int_in(p, "max_packet_bytes", self.max_packet_bytes, 1, 262_144)?;
        f64_in(p, "tolerance", self.tolerance, 0.0, 1.0)?;
        f64_in(p, "min_regular", self.min_regular, 0.0, 1.0)?;
        f64_positive(p, "min_period_s", self.min_period_s, 86_400.0)?;
        f64_in(p, "max_period_s", self.max_period_s, self.min_period_s, 1e6)?;
        int_in(p, "max_flows", self.max_flows, 1, 1 << 24)
    }
}

impl HandshakeConfig {
    fn check(&self, p: &SettingPath) -> Result<(), SettingError> {
        int_in(p, "max_pending", self.max_pending, 1, 1 << 26)?;
        f64_positive(p, "timeout_s", self.timeout_s, 3600.0)?;
        f64_in(
            p,
            "min_retransmit_gap_s",
            self.min_retransmit_gap_s,
            0.0,
            3600.0,
        )?;
        f64_positive(p, "burst_window_s", self.burst_window_s, 86_400.0)?;
        int_in(p, "min_retransmits", self.min_retransmits, 1, 1_000_000_000)?;
        f64_in(
            p,
            "min_retransmit_ratio",
            self.min_retransmit_ratio,
            0.0,
            1.0,
        )?;
        int_in(
            p,
            "clear_retransmits",
            self.clear_retransmits,
            0,
            self.min_retransmits,
        )?;
        int_in(p, "max_servers", self.max_servers, 1, 1 << 20)
    }
}

// flow health (issue 14)
impl TrafficDropConfig {
    fn check(&self, p: &SettingPath, window_s: f64) -> Result<(), SettingError> {
        f64_in(p, "window_s", self.window_s, window_s, 3600.0)?;
        f64_in(
            p,
            "baseline_s",
            self.baseline_s,
            3.0 * self.window_s,
            86_400.0,
        )?;
        f64_in(p, "min_baseline_pps", self.min_baseline_pps, 0.001, 1e12)?;
        f64_in(p, "drop_ratio", self.drop_ratio, 0.0, 0.5)?;
        int_in(p, "min_windows", self.min_windows, 1, 10_000)?;
        f64_in(p, "steady_floor", self.steady_floor, 0.0, 1.0)?;
        f64_in(p, "resume_ratio", self.resume_ratio, self.drop_ratio, 1.0)?;
        f64_in(p, "min_pickup", self.min_pickup, 0.0, 10.0)?;
        f64_in(p, "max_flow_share", self.max_flow_share, 0.0, 1.0)?;
        int_in(p, "max_tracked", self.max_tracked, 1, 1 << 20)?;
        for (i, g) in self.group.iter().enumerate() {
            let at = p.key("group").index(i);
            int_in(&at, "members", g.members.len(), 2, 4096)?;
        }
        Ok(())
    }
}

impl RetransmitConfig {
    fn check(&self, p: &SettingPath, window_s: f64) -> Result<(), SettingError> {
        int_in(p, "max_flows", self.max_flows, 2, 1 << 26)?;
        f64_in(p, "idle_s", self.idle_s, 0.0, 86_400.0)?;
        f64_in(p, "reorder_ms", self.reorder_ms, 0.0, 10_000.0)?;
        f64_in(p, "window_s", self.window_s, window_s, 3600.0)?;
        int_in(p, "min_retransmits", self.min_retransmits, 1, 1_000_000_000)?;
        f64_in(p, "min_share", self.min_share, 0.0, 1.0)?;
        f64_in(p, "baseline_factor", self.baseline_factor, 1.0, 1e6)?;
        f64_positive(p, "ewma_alpha", self.ewma_alpha, 1.0)?;
        int_in(
            p,
            "min_baseline_windows",
            self.min_baseline_windows,
            1,
            100_000,
        )?;
        f64_in(
            p,
            "critical_share",
            self.critical_share,
            self.min_share,
            1.0,
        )?;
        int_in(p, "max_servers", self.max_servers, 1, 1 << 24)
    }
}

impl UpgradeConfig {
    fn check(&self, p: &SettingPath, window_s: f64) -> Result<(), SettingError> {
        int_in(p, "max_pending", self.max_pending, 1, 1 << 24)?;
        f64_positive(p, "timeout_s", self.timeout_s, 3600.0)?;
        f64_in(p, "forget_s", self.forget_s, self.timeout_s, 86_400.0)?;
        f64_in(p, "window_s", self.window_s, window_s, 3600.0)?;
        int_in(p, "min_attempts", self.min_attempts, 1, 1_000_000_000)?;
        f64_in(p, "min_failure_share", self.min_failure_share, 0.0, 1.0)?;
        f64_in(
            p,
            "critical_share",
            self.critical_share,
            self.min_failure_share,
            1.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_in_range_and_bad_values_are_named() {
        AnalyzerConfig::default().check().unwrap();
        let bad = |edit: &dyn Fn(&mut AnalyzerConfig)| {
            let mut c = AnalyzerConfig::default();
            edit(&mut c);
            c.check().unwrap_err().to_string()
        };
        for w in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-9] {
            assert!(bad(&|c| c.window_s = w).starts_with("analyzer.window_s = "));
        }
        assert!(bad(&|c| c.heartbeat.k = f64::NAN).starts_with("analyzer.heartbeat.k = NaN"));
        assert!(bad(&|c| c.heavy_hitters.min_share = -0.1).contains("from 0 to 1"));
        assert!(bad(&|c| c.setup_growth.point_s = 0.0).contains("setup_growth.point_s"));
        let coarse = bad(&|c| c.setup_growth.coarse_levels_s = vec![60.0, 90.0]);
        assert!(
            coarse.starts_with("analyzer.setup_growth.coarse_levels_s[2] = 90"),
            "{coarse}"
        );
        assert!(bad(&|c| c.setup_growth.node_horizon_s = -1.0).contains("node_horizon_s"));
        for cap in [0, 4_000_000_000_000] {
            assert!(bad(&|c| c.heavy_hitters.sketch_capacity = cap).contains("sketch_capacity = "));
        }
    }
}
