//! The merger: one thread's view over all shards. It merges each window once every shard
//! has closed it, judges heavy hitters on base windows, and rolls windows up for the
//! setup-growth fit, the SYN-retransmission judgement and the 10 s / 60 s levels.
use std::collections::BTreeMap;
use std::net::IpAddr;

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;
use tapwatch_classifier::{Classifier, TenantId, TenantMap};

use crate::config::AnalyzerConfig;
use crate::finding::{endpoint, Finding, FindingKind, Severity};
use crate::growth::{GrowthDetector, GrowthPoint};
use crate::heavy::HeavyJudge;
use crate::window::{latency_histogram, WindowStats};

/// Widths of the rollup levels above the base window, seconds.
pub const ROLLUP_LEVELS_S: [f64; 2] = [10.0, 60.0];

/// Names of the levels in window summaries: the base window, then the rollups.
const LEVEL_NAMES: [&str; 3] = ["base", "10s", "60s"];

/// Accumulates consecutive windows into one of a wider width.
struct Rollup {
    width_ns: u64,
    current: Option<WindowStats>,
}

impl Rollup {
    fn new(width_s: f64) -> Rollup {
        Rollup {
            width_ns: ((width_s * 1e9) as u64).max(1),
            current: None,
        }
    }

    /// Adds a window; returns the finished rollup when this window starts a new one.
    fn push(&mut self, w: &WindowStats) -> Option<WindowStats> {
        let start = w.start_ns / self.width_ns * self.width_ns;
        let done = match &self.current {
            Some(c) if c.start_ns != start => self.current.take(),
            _ => None,
        };
        let cur = self
            .current
            .get_or_insert_with(|| w.empty_like(start, start + self.width_ns));
        cur.merge(w);
        cur.start_ns = start;
        cur.end_ns = start + self.width_ns;
        done
    }

    fn finish(&mut self) -> Option<WindowStats> {
        self.current.take()
    }
}

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

/// One setup-growth point with the fit it produced, for storage.
#[derive(Clone, Debug)]
pub struct GrowthSample {
    /// Tenant name.
    pub tenant: String,
    /// Point start (event time, ns).
    pub start_ns: u64,
    /// Point width, seconds.
    pub width_s: f64,
    /// Distinct sources (nodes) in the point.
    pub nodes: u64,
    /// Connection setups in the point.
    pub setups: u64,
    /// The fit over the tenant's history after this point, if there were enough points.
    pub fit: Option<crate::growth::Fit>,
}

/// Merges shard windows and runs the window-level detectors.
pub struct Merger {
    cfg: AnalyzerConfig,
    tenants: TenantMap,
    /// Windows not yet closed by every shard: by start, each shard's copy.
    pending: BTreeMap<u64, Vec<Option<WindowStats>>>,
    /// Latest window start each shard has closed.
    shard_progress: Vec<Option<u64>>,
    heavy: HeavyJudge,
    growth: GrowthDetector,
    growth_points: Rollup,
    bursts: Rollup,
    levels: Vec<Rollup>,
    syn_firing: FxHashMap<(IpAddr, u16), u64>,
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
    growth_samples: Vec<GrowthSample>,
}

impl Merger {
    /// A merger for `shards` shards.
    pub fn new(cfg: &AnalyzerConfig, classifier: &Classifier, shards: usize) -> Merger {
        Merger {
            tenants: classifier.tenants().clone(),
            pending: BTreeMap::new(),
            shard_progress: vec![None; shards],
            heavy: HeavyJudge::new(cfg.heavy_hitters.clone(), classifier),
            growth: GrowthDetector::new(cfg.setup_growth.clone()),
            growth_points: Rollup::new(cfg.setup_growth.point_s),
            bursts: Rollup::new(cfg.handshake.burst_window_s),
            levels: ROLLUP_LEVELS_S.iter().map(|w| Rollup::new(*w)).collect(),
            syn_firing: FxHashMap::default(),
            windows: [0; 3],
            latency: Vec::new(),
            last_window: None,
            record: false,
            log: Vec::new(),
            keep: false,
            closed: Vec::new(),
            growth_samples: Vec::new(),
            cfg: cfg.clone(),
        }
    }

    /// The (nodes, setups) points behind a tenant's growth fit.
    pub fn growth_history(&self, tenant: usize) -> Vec<(f64, f64)> {
        self.growth.history(tenant)
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
    }

    /// Whether kept windows or growth points are waiting.
    #[inline]
    pub fn has_closed(&self) -> bool {
        !self.closed.is_empty() || !self.growth_samples.is_empty()
    }

    /// The base windows and growth points finished since the last call, in order.
    pub fn take_closed(&mut self) -> (Vec<WindowStats>, Vec<GrowthSample>) {
        (
            std::mem::take(&mut self.closed),
            std::mem::take(&mut self.growth_samples),
        )
    }

    /// The tenant map windows are labelled with.
    pub fn tenants(&self) -> &TenantMap {
        &self.tenants
    }

    fn log_window(&mut self, w: &WindowStats, level: &str) {
        if self.record {
            let mut v = w.summary(&self.tenants);
            v["level"] = serde_json::json!(level);
            self.log.push(v);
        }
    }

    /// Takes new labels after a reload (tenant names and map, protocol-type names).
    pub fn relabel(&mut self, classifier: &Classifier) {
        self.tenants = classifier.tenants().clone();
        self.heavy.relabel(classifier);
    }

    /// The last setup-growth fit per tenant index: (fit, node range, setup rate per s).
    pub fn growth_fits(&self) -> &[Option<(crate::growth::Fit, f64, f64)>] {
        &self.growth.last_fit
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
        if let Some(p) = self.growth_points.finish() {
            self.growth_point(&p, out);
        }
        if let Some(b) = self.bursts.finish() {
            self.burst(&b, out);
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
        self.heavy.judge(&w, &self.tenants, out);
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
        if let Some(p) = self.growth_points.push(&w) {
            self.growth_point(&p, out);
        }
        if let Some(b) = self.bursts.push(&w) {
            self.burst(&b, out);
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

    fn growth_point(&mut self, p: &WindowStats, out: &mut Vec<Finding>) {
        let total_setups: u64 = p.tenants.iter().map(|t| t.setups).sum();
        let share = |x: u64, total: u64| {
            if total > 0 {
                x as f64 / total as f64
            } else {
                0.0
            }
        };
        for (i, t) in p.tenants.iter().enumerate() {
            if i == TenantId::UNASSIGNED.0 as usize {
                continue; // "unassigned" is not one tenant: its nodes are unrelated
            }
            let name = self.tenants.name(TenantId(i as u16)).to_string();
            let point = GrowthPoint {
                index: i,
                tenant: &name,
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                nodes: t.nodes.count().0,
                setups: t.setups,
                width_s: p.width_s(),
                setup_share: share(t.setups, total_setups),
                packet_share: share(t.packets, p.packets),
            };
            self.growth.observe(&point, out);
            if self.keep && point.nodes >= 2 && point.setups >= 1 {
                self.growth_samples.push(GrowthSample {
                    tenant: name.clone(),
                    start_ns: p.start_ns,
                    width_s: p.width_s(),
                    nodes: point.nodes,
                    setups: point.setups,
                    fit: self.growth.last_fit.get(i).copied().flatten().map(|f| f.0),
                });
            }
        }
    }

    fn burst(&mut self, b: &WindowStats, out: &mut Vec<Finding>) {
        let cfg = &self.cfg.handshake;
        let mut hot = Vec::new();
        for (server, s) in &b.servers {
            let total = s.syns + s.retransmits;
            let ratio = if total > 0 {
                s.retransmits as f64 / total as f64
            } else {
                0.0
            };
            let raise = s.retransmits >= cfg.min_retransmits && ratio >= cfg.min_retransmit_ratio;
            // Hysteresis: a firing server stays firing down to `clear_retransmits`.
            let holds =
                self.syn_firing.contains_key(server) && s.retransmits >= cfg.clear_retransmits;
            if raise || holds {
                hot.push(*server);
                let started = *self.syn_firing.entry(*server).or_insert(b.start_ns);
                let h = s.syn_to_syn_ack.as_ref();
                let pct = |q: f64| h.map(|h| h.value_at_quantile(q)).unwrap_or(0);
                out.push(Finding {
                    kind: FindingKind::SynRetransmits,
                    active: true,
                    tenant: Some(self.tenants.name(self.tenants.lookup(server.0)).to_string()),
                    subject: format!("{}/tcp", endpoint(server.0, server.1)),
                    severity: if ratio >= 0.5 { Severity::Critical } else { Severity::Warning },
                    started_ns: started,
                    detected_ns: b.end_ns,
                    value: s.retransmits as f64,
                    threshold: cfg.min_retransmits as f64,
                    evidence: serde_json::json!({
                        "window_s": b.width_s(),
                        "syns": s.syns,
                        "retransmitted_syns": s.retransmits,
                        "retransmit_ratio": ratio,
                        "min_ratio": cfg.min_retransmit_ratio,
                        "rsts": s.rsts,
                        "syn_to_syn_ack_us": {"p50": pct(0.5), "p99": pct(0.99), "max": h.map(|h| h.max()).unwrap_or(0), "samples": h.map(|h| h.len()).unwrap_or(0)},
                    }),
                });
            }
        }
        let tenants = &self.tenants;
        self.syn_firing.retain(|server, since| {
            if hot.contains(server) {
                return true;
            }
            out.push(Finding {
                kind: FindingKind::SynRetransmits,
                active: false,
                tenant: Some(tenants.name(tenants.lookup(server.0)).to_string()),
                subject: format!("{}/tcp", endpoint(server.0, server.1)),
                severity: Severity::Warning,
                started_ns: *since,
                detected_ns: b.end_ns,
                value: b.servers.get(server).map(|s| s.retransmits).unwrap_or(0) as f64,
                threshold: cfg.min_retransmits as f64,
                evidence: serde_json::json!({"window_s": b.width_s()}),
            });
            false
        });
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
