//! Detector settings: the `[analyzer]` section of the config file. Every field has a
//! default that detects the scenario suite with no configuration beyond a tenants file.
use serde::Deserialize;

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
