//! Detector settings: the `[analyzer]` section of the config file. Every field has a
//! default that detects the scenario suite with no configuration beyond a tenants file.
use serde::Deserialize;

pub use crate::detect::growth::SetupGrowthConfig;
pub use crate::detect::handshake::HandshakeConfig;
pub use crate::detect::heartbeat::HeartbeatConfig;
pub use crate::detect::heavy::HeavyHitterConfig;

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
