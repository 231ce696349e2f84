//! Where the engine's typed outputs go: one small trait, many sinks (the alerts JSON-lines
//! file, webhooks, history storage, the window log, the live status views).
use tapwatch_analyzer::{DropRate, GrowthSample, Merger, WindowStats};
use tapwatch_rules::{AlertEngine, AlertEvent};

/// A base window merged from every worker, with what finished alongside it.
pub struct WindowDone<'a> {
    /// The merger after the window (its `last_window`, fits, latency).
    pub merger: &'a Merger,
    /// The rules engine after the window's findings (open alerts, counts).
    pub rules: &'a AlertEngine,
    /// Finished base windows kept for storage (empty unless the merger keeps them).
    pub closed: &'a [WindowStats],
    /// Finished setup-growth points kept for storage.
    pub growth: &'a [GrowthSample],
    /// Tracked destinations' counts per traffic-drop window, kept for storage.
    pub drops: &'a [DropRate],
    /// JSON summaries of the windows and rollups that finished (empty unless recorded).
    pub log: &'a [serde_json::Value],
}

/// What sinks report at the end of a run, for the summary.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Per webhook: delivery counters after the drain.
    pub webhooks: Vec<serde_json::Value>,
    /// What the storage sink wrote, if it ran.
    pub storage: Option<serde_json::Value>,
    /// What evidence captures wrote and lost, if they ran.
    pub evidence: Option<serde_json::Value>,
}

/// A consumer of the engine's outputs. Every method has a default that ignores its input,
/// so a sink implements only what it uses.
pub trait Sink {
    /// Alert events, in the order the rules made them.
    fn alerts(&mut self, _events: &[AlertEvent]) -> anyhow::Result<()> {
        Ok(())
    }

    /// A base window was merged.
    fn window(&mut self, _done: &WindowDone<'_>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Every worker's periodic flows and BFD sessions at event time `at_ns`, by subject.
    fn periodic(&mut self, _flows: &[serde_json::Value], _at_ns: u64) -> anyhow::Result<()> {
        Ok(())
    }

    /// End of the run: flush, drain, and say what happened in `report`.
    fn finish(&mut self, _report: &mut RunReport) -> anyhow::Result<()> {
        Ok(())
    }
}
