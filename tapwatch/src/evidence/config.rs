//! `[evidence]`: header-only captures written for every firing alert.
use serde::Deserialize;
use tapwatch_analyzer::setting::{f64_in, int_in};
use tapwatch_analyzer::{SettingError, SettingPath};

/// `[evidence]` settings (docs/usage.md, "Evidence captures").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceConfig {
    /// Write a capture for every firing alert (needs the store: not with `--no-store`).
    pub enabled: bool,
    /// Packet headers kept per ring (the replay reader has one, each live worker one);
    /// each costs [`super::ring::SLOT_BYTES`] bytes.
    pub ring_packets: usize,
    /// Seconds of the subject's packets before detection taken from the ring.
    pub before_s: f64,
    /// Seconds after detection a capture goes on collecting.
    pub after_s: f64,
    /// Packets per capture at most (half of them at most from before detection).
    pub max_packets: usize,
    /// Captures collecting at once per ring at most (more are skipped and counted).
    pub max_active: usize,
    /// Evidence files on disk in total at most, MiB: the oldest are removed to make room.
    pub max_disk_mib: u64,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            enabled: true,
            ring_packets: 65_536,
            before_s: 5.0,
            after_s: 10.0,
            max_packets: 2_000,
            max_active: 32,
            max_disk_mib: 1_024,
        }
    }
}

impl EvidenceConfig {
    /// Checks every number against its range, naming the first one outside it.
    pub fn check(&self) -> Result<(), SettingError> {
        let p = SettingPath::new("evidence");
        int_in(&p, "ring_packets", self.ring_packets, 1_024, 4_194_304)?;
        f64_in(&p, "before_s", self.before_s, 0.0, 600.0)?;
        f64_in(&p, "after_s", self.after_s, 0.0, 600.0)?;
        int_in(&p, "max_packets", self.max_packets, 1, 1_000_000)?;
        int_in(&p, "max_active", self.max_active, 1, 1_024)?;
        int_in(&p, "max_disk_mib", self.max_disk_mib, 1, 1 << 24)
    }

    /// Seconds before detection, ns.
    pub fn before_ns(&self) -> u64 {
        (self.before_s * 1e9) as u64
    }

    /// Seconds after detection, ns.
    pub fn after_ns(&self) -> u64 {
        (self.after_s * 1e9) as u64
    }
}
