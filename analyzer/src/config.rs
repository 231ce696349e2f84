//! Detector settings: the `[analyzer]` section of the config file. Every field has a
//! default that detects the scenario suite with no configuration beyond a tenants file.
use serde::Deserialize;
use tapwatch_classifier::setting::{f64_in, f64_positive, int_in};
use tapwatch_classifier::{SettingError, SettingPath};

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
        }
    }
}

/// Heavy hitters: a key with a large share of a window that is also far above its own baseline.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeavyHitterConfig {
    /// Keys tracked per window per sketch (error bound ≈ 2 × packets / capacity).
    pub sketch_capacity: usize,
    /// Share of the window's packets (or bytes) a key must hold.
    pub min_share: f64,
    /// Packets per second a key must reach, whatever its share.
    pub min_pps: f64,
    /// Bytes per second a key must reach to be heavy by bytes.
    pub min_bytes_per_s: f64,
    /// How many times its baseline mean the key must reach.
    pub baseline_factor: f64,
    /// Standard deviations above its baseline mean the key must reach.
    pub baseline_sigmas: f64,
    /// EWMA weight of each new window in the baselines.
    pub ewma_alpha: f64,
    /// Seconds during which baselines warm up; meanwhile only keys above `warmup_share`
    /// and `warmup_factor × min_pps` are flagged.
    pub warmup_s: f64,
    /// Share a key needs during warm-up.
    pub warmup_share: f64,
    /// Multiple of `min_pps` a key needs during warm-up.
    pub warmup_factor: f64,
    /// Hysteresis: a firing key keeps firing while it holds at least this share…
    pub clear_share: f64,
    /// …and at least this many times its baseline mean.
    pub clear_factor: f64,
    /// Windows a firing key must stay below `clear_share` before it resolves.
    pub clear_windows: u32,
}

impl Default for HeavyHitterConfig {
    fn default() -> Self {
        HeavyHitterConfig {
            sketch_capacity: 1024,
            min_share: 0.2,
            min_pps: 200.0,
            min_bytes_per_s: 1_000_000.0,
            baseline_factor: 3.0,
            baseline_sigmas: 6.0,
            ewma_alpha: 0.05,
            warmup_s: 5.0,
            warmup_share: 0.5,
            warmup_factor: 5.0,
            clear_share: 0.1,
            clear_factor: 1.5,
            clear_windows: 5,
        }
    }
}

/// Quadratic growth of connection setups with a tenant's node count.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SetupGrowthConfig {
    /// Width of the points the fit uses, seconds (a rollup of the base windows).
    pub point_s: f64,
    /// Points kept per tenant (the sliding history).
    pub history: usize,
    /// Points needed before fitting.
    pub min_points: usize,
    /// Exponent at or above which growth is flagged.
    pub min_exponent: f64,
    /// Hysteresis: a flagged tenant clears when its exponent falls below this.
    pub clear_exponent: f64,
    /// Ratio of largest to smallest node count the history must span.
    pub min_node_range: f64,
    /// Coefficient of determination the fit must reach (log-log).
    pub min_r2: f64,
    /// Extra protocol types (by name) that count as connection setups besides TCP SYN.
    pub setup_types: Vec<String>,
    /// Distinct sources per tenant counted exactly up to this many, then estimated.
    pub exact_nodes: usize,
}

impl Default for SetupGrowthConfig {
    fn default() -> Self {
        SetupGrowthConfig {
            point_s: 10.0,
            history: 30,
            min_points: 6,
            min_exponent: 1.6,
            clear_exponent: 1.4,
            min_node_range: 2.0,
            min_r2: 0.8,
            setup_types: Vec::new(),
            exact_nodes: 4096,
        }
    }
}

/// Periodic flows and BFD sessions that fall silent.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// A periodic flow is late after this many periods of silence.
    pub k: f64,
    /// Inter-arrival samples needed before a flow counts as periodic.
    pub min_samples: usize,
    /// Seconds a flow must have kept its rhythm before it counts as periodic.
    pub min_learn_s: f64,
    /// Flows that carry a packet larger than this (wire bytes) are data, not heartbeats.
    pub max_packet_bytes: u32,
    /// Each interval of a periodic flow lies within this fraction of the period from it
    /// (BFD's own transmit jitter is up to 25 %).
    pub tolerance: f64,
    /// Fraction of the recent intervals that must be within the tolerance.
    pub min_regular: f64,
    /// Shortest period considered a heartbeat, seconds (faster flows are streams).
    pub min_period_s: f64,
    /// Longest period considered, seconds.
    pub max_period_s: f64,
    /// Flows tracked at most per worker.
    pub max_flows: usize,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            k: 3.0,
            min_samples: 6,
            min_learn_s: 10.0,
            max_packet_bytes: 512,
            tolerance: 0.3,
            min_regular: 0.9,
            min_period_s: 0.05,
            max_period_s: 600.0,
            max_flows: 1 << 17,
        }
    }
}

/// TCP handshakes seen from the mirror point.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandshakeConfig {
    /// Half-open handshakes tracked at most per worker.
    pub max_pending: usize,
    /// Seconds after which an unanswered SYN is forgotten.
    pub timeout_s: f64,
    /// Seconds between two copies of a SYN for the later one to count as a retransmission.
    pub min_retransmit_gap_s: f64,
    /// Width of the SYN-retransmission judgement, seconds (a rollup of the base windows).
    pub burst_window_s: f64,
    /// Retransmitted SYNs towards one server within the burst window that make an anomaly.
    pub min_retransmits: u64,
    /// Share of that server's SYNs that must be retransmissions.
    pub min_retransmit_ratio: f64,
    /// Hysteresis: a firing server clears when its retransmissions in a burst window fall
    /// below this many.
    pub clear_retransmits: u64,
    /// Servers with their own latency histogram per window (the busiest by SYNs).
    pub max_servers: usize,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            max_pending: 1 << 18,
            timeout_s: 30.0,
            min_retransmit_gap_s: 0.5,
            burst_window_s: 10.0,
            min_retransmits: 5,
            min_retransmit_ratio: 0.2,
            clear_retransmits: 2,
            max_servers: 256,
        }
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
        self.handshake.check(&p.key("handshake"))
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
        int_in(p, "exact_nodes", self.exact_nodes, 0, 1 << 24)
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
        for cap in [0, 4_000_000_000_000] {
            assert!(bad(&|c| c.heavy_hitters.sketch_capacity = cap).contains("sketch_capacity = "));
        }
    }
}
