//! The merger: one thread's view over all shards. It merges each window once every shard
//! has closed it, hands it to the window-level detectors (see [`crate::detect`]), and rolls
//! windows up into the 10 s / 60 s levels of the window log.
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use tapwatch_classifier::{Classifier, TenantMap};

use crate::config::AnalyzerConfig;
use crate::detect::growth::{Fit, GrowthSample};
use crate::detect::traffic_drop::DropRate;
use crate::detect::WindowDetectors;
use crate::finding::Finding;
use crate::health::ServerHealth;
use crate::labels::Labels;
use crate::window::{latency_histogram, Rollup, WindowStats};

/// Widths of the rollup levels above the base window, seconds.
pub const ROLLUP_LEVELS_S: [f64; 2] = [10.0, 60.0];

/// Names of the levels in window summaries: the base window, then the rollups.
const LEVEL_NAMES: [&str; 3] = ["base", "10s", "60s"];

/// Whole-run handshake latency per tenant, for summaries.
#[derive(Clone, Debug, Default)]
pub struct TenantLatency {
    /// SYN → SYN-ACK, µs.
    pub syn_to_syn_ack: Option<Histogram<u64>>,
    /// SYN-ACK → ACK, µs.
    pub syn_ack_to_ack: Option<Histogram<u64>>,
    /// Connection setups.
    pub setups: u64,
}

/// Merges shard windows and runs the window-level detectors.
pub struct Merger {
    cfg: AnalyzerConfig,
    labels: Labels,
    /// Windows not yet closed by every shard: by start, each shard's copy.
    pending: BTreeMap<u64, Vec<Option<WindowStats>>>,
    /// Latest window start each shard has closed.
    shard_progress: Vec<Option<u64>>,
    detectors: WindowDetectors,
    levels: Vec<Rollup>,
    /// Windows finished per level: base, then [`ROLLUP_LEVELS_S`].
    pub windows: [u64; 3],
    /// Whole-run latency and setups per tenant index.
    pub latency: Vec<TenantLatency>,
    /// The last finished base window (for live views of top talkers).
    pub last_window: Option<WindowStats>,
    record: bool,
    log: Vec<serde_json::Value>,
    keep: bool,
    closed: Vec<WindowStats>,
    servers_untracked: u64,
    /// Whole-run flow health over every server (for summaries and cross-checks).
    pub flow_health: ServerHealth,
}

impl Merger {
    /// A merger for `shards` shards.
    pub fn new(cfg: &AnalyzerConfig, classifier: &Classifier, shards: usize) -> Merger {
        let labels = Labels::new(cfg, classifier);
        Merger {
            pending: BTreeMap::new(),
            shard_progress: vec![None; shards],
            detectors: WindowDetectors::new(cfg, &labels),
            levels: ROLLUP_LEVELS_S.iter().map(|w| Rollup::new(*w)).collect(),
            windows: [0; 3],
            latency: Vec::new(),
            last_window: None,
            record: false,
            log: Vec::new(),
            keep: false,
            closed: Vec::new(),
            servers_untracked: 0,
            flow_health: ServerHealth::default(),
            labels,
            cfg: cfg.clone(),
        }
    }

    /// Puts setup-growth points stored by an earlier run back into the tenants' histories
    /// (`tapwatch run` at start); returns how many were restored.
    pub fn restore_growth(&mut self, points: &[crate::detect::growth::StoredPoint]) -> usize {
        self.detectors.growth.restore(points, self.labels.tenants())
    }

    /// The (nodes, setups) points behind a tenant's growth fit.
    pub fn growth_history(&self, tenant: usize) -> Vec<(f64, f64)> {
        self.detectors.growth.detector().history(tenant)
    }

    /// Keeps a JSON summary of every finished window (base and rollups) for
    /// [`Merger::take_window_log`].
    pub fn record_windows(&mut self, on: bool) {
        self.record = on;
    }

    /// Whether window summaries are waiting.
    #[inline]
    pub fn has_window_log(&self) -> bool {
        !self.log.is_empty()
    }

    /// The window summaries recorded since the last call, in the order they finished.
    pub fn take_window_log(&mut self) -> Vec<serde_json::Value> {
        std::mem::take(&mut self.log)
    }

    /// Keeps every finished base window and setup-growth point for [`Merger::take_closed`]
    /// (the storage sink's rows).
    pub fn keep_closed(&mut self, on: bool) {
        self.keep = on;
        self.detectors.growth.keep = on;
        self.detectors.traffic_drop.keep_rates = on;
    }

    /// Whether kept windows or growth points are waiting.
    #[inline]
    pub fn has_closed(&self) -> bool {
        !self.closed.is_empty()
            || !self.detectors.growth.samples.is_empty()
            || !self.detectors.traffic_drop.samples.is_empty()
    }

    /// The tracked destinations' counts per traffic-drop window since the last call (kept
    /// with [`Merger::keep_closed`]).
    pub fn take_drop_rates(&mut self) -> Vec<DropRate> {
        std::mem::take(&mut self.detectors.traffic_drop.samples)
    }

    /// The base windows and growth points finished since the last call, in order.
    pub fn take_closed(&mut self) -> (Vec<WindowStats>, Vec<GrowthSample>) {
        (
            std::mem::take(&mut self.closed),
            std::mem::take(&mut self.detectors.growth.samples),
        )
    }

    /// Handshake events of servers the windows had no room for (`handshake.max_servers`),
    /// summed over every finished base window.
    pub fn servers_untracked(&self) -> u64 {
        self.servers_untracked
    }

    /// Latency samples of (server, measure) pairs beyond the baselines `latency_shift` keeps
    /// (4 × `latency.max_subjects`), not judged.
    pub fn latency_untracked(&self) -> u64 {
        self.detectors.latency_shift.untracked
    }

    /// Destinations the traffic-drop table evicted for busier ones (`traffic_drop.max_tracked`).
    pub fn drop_keys_evicted(&self) -> u64 {
        self.detectors.traffic_drop.evicted
    }

    /// The tenant map windows are labelled with.
    pub fn tenants(&self) -> &TenantMap {
        self.labels.tenants()
    }

    /// The labels windows are named with (for storage rows).
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    fn log_window(&mut self, w: &WindowStats, level: &str) {
        if self.record {
            let mut v = w.summary(self.labels.tenants());
            v["level"] = serde_json::json!(level);
            self.log.push(v);
        }
    }

    /// Takes new labels after a reload (tenant names and map, protocol-type names).
    pub fn relabel(&mut self, classifier: &Classifier) {
        self.labels = self.labels.next(&self.cfg, classifier);
        self.detectors.heavy.relabel(&self.labels);
        self.detectors.growth.relabel(&self.labels);
    }

    /// The last setup-growth fit per tenant index: (fit, node range, setup rate per s).
    pub fn growth_fits(&self) -> &[Option<(Fit, f64, f64)>] {
        &self.detectors.growth.detector().last_fit
    }

    /// A window closed by `shard`.
    pub fn push(&mut self, shard: usize, w: WindowStats, out: &mut Vec<Finding>) {
        let start = w.start_ns;
        if let Some(p) = self.shard_progress.get_mut(shard) {
            *p = Some(p.map_or(start, |s| s.max(start)));
        }
        let shards = self.shard_progress.len();
        let slots = self
            .pending
            .entry(start)
            .or_insert_with(|| vec![None; shards]);
        match slots.get_mut(shard) {
            Some(slot @ None) => *slot = Some(w),
            Some(Some(acc)) => acc.merge(&w),
            None => slots.push(Some(w)),
        }
        // A window is complete once every shard has closed it or a later one.
        let Some(done_upto) = self
            .shard_progress
            .iter()
            .copied()
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().min())
        else {
            return;
        };
        while let Some((&s, _)) = self.pending.first_key_value() {
            if s > done_upto {
                break;
            }
            let parts = self.pending.pop_first().expect("checked").1;
            if let Some(w) = merge_in_order(parts) {
                self.finished(w, out);
            }
        }
    }

    /// Finishes everything pending (end of a replay, or shutdown).
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        while let Some((_, parts)) = self.pending.pop_first() {
            if let Some(w) = merge_in_order(parts) {
                self.finished(w, out);
            }
        }
        for d in self.detectors.each() {
            d.finish(self.labels.tenants(), out);
        }
        let rolled: Vec<(usize, WindowStats)> = self
            .levels
            .iter_mut()
            .enumerate()
            .filter_map(|(i, l)| l.finish().map(|r| (i, r)))
            .collect();
        for (i, r) in rolled {
            self.windows[i + 1] += 1;
            self.log_window(&r, LEVEL_NAMES[i + 1]);
        }
    }

    fn finished(&mut self, w: WindowStats, out: &mut Vec<Finding>) {
        self.windows[0] += 1;
        self.servers_untracked += w.servers_untracked;
        for h in w.health.values() {
            let mut h = h.clone();
            h.worst = Default::default();
            self.flow_health.merge(&h);
        }
        for (i, t) in w.tenants.iter().enumerate() {
            if self.latency.len() <= i {
                self.latency.resize_with(i + 1, TenantLatency::default);
            }
            let l = &mut self.latency[i];
            l.setups += t.setups;
            for (dst, src) in [
                (&mut l.syn_to_syn_ack, &t.syn_to_syn_ack),
                (&mut l.syn_ack_to_ack, &t.syn_ack_to_ack),
            ] {
                if let Some(h) = src {
                    let _ = dst.get_or_insert_with(latency_histogram).add(h);
                }
            }
        }
        for d in self.detectors.each() {
            d.window(&w, self.labels.tenants(), out);
        }
        self.log_window(&w, LEVEL_NAMES[0]);
        let rolled: Vec<(usize, WindowStats)> = self
            .levels
            .iter_mut()
            .enumerate()
            .filter_map(|(i, l)| l.push(&w).map(|r| (i, r)))
            .collect();
        for (i, r) in rolled {
            self.windows[i + 1] += 1;
            self.log_window(&r, LEVEL_NAMES[i + 1]);
        }
        if self.keep {
            self.closed.push(w.clone());
        }
        self.last_window = Some(w);
    }
}

/// One shard's copies of a window merged in shard order (the sketches' approximations then
/// do not depend on which shard's copy arrived first).
fn merge_in_order(parts: Vec<Option<WindowStats>>) -> Option<WindowStats> {
    let mut parts = parts.into_iter().flatten();
    let mut w = parts.next()?;
    for p in parts {
        w.merge(&p);
    }
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::SEC;

    fn window(i: u64, packets: u64) -> WindowStats {
        let mut w = WindowStats::new(i * SEC, (i + 1) * SEC, 16, 16, 16, 32);
        w.packets = packets;
        w
    }

    #[test]
    fn a_window_is_judged_once_every_shard_has_closed_it() {
        let mut m = Merger::new(&AnalyzerConfig::default(), &Classifier::default(), 2);
        let mut out = Vec::new();
        m.push(0, window(0, 3), &mut out);
        m.push(0, window(1, 1), &mut out);
        assert_eq!(m.windows[0], 0, "shard 1 has not closed window 0");
        let mut late = window(0, 4);
        late.servers_untracked = 2;
        m.push(1, late, &mut out);
        assert_eq!(m.windows[0], 1);
        assert_eq!(m.servers_untracked(), 2);
        assert_eq!(m.last_window.as_ref().map(|w| w.packets), Some(7), "merged");
        m.push(1, window(2, 5), &mut out);
        assert_eq!(
            m.windows[0], 2,
            "shard 1 closed window 2, so window 1 is complete"
        );
        m.finish(&mut out);
        assert_eq!(m.windows, [3, 1, 1], "the partial rollups are flushed too");
        assert!(out.is_empty());
    }

    #[test]
    fn kept_windows_and_the_window_log_are_handed_over() {
        let mut m = Merger::new(&AnalyzerConfig::default(), &Classifier::default(), 1);
        m.keep_closed(true);
        m.record_windows(true);
        let mut out = Vec::new();
        for i in 0..12 {
            m.push(0, window(i, 1), &mut out);
        }
        assert!(m.has_closed() && m.has_window_log());
        let (closed, growth) = m.take_closed();
        assert_eq!((closed.len(), growth.len()), (12, 0));
        let log = m.take_window_log();
        assert_eq!(log.len(), 13, "12 base windows and one 10 s rollup");
        assert_eq!(
            (log[10]["level"].as_str(), log[11]["level"].as_str()),
            (Some("base"), Some("10s"))
        );
        assert!(!m.has_closed());
    }
}
